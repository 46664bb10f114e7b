#pragma once

// Placeholder: filled in by the fuse change.

namespace tquant {}
