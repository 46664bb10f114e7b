#include "tquant/fuse.h"
