#pragma once

// Placeholder: filled in by the sensitivity change.

namespace tquant {}
