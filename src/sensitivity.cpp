#include "tquant/sensitivity.h"
