// convert and quantize_dynamic (include/tquant/quantize.h).
#include "tquant/quantize.h"
