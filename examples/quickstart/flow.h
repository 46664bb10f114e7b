#pragma once

/// Trains a small classifier, quantizes it with PTQ and with QAT, converts both to INT8, and
/// saves / reloads the INT8 model, printing every pass's report and an accuracy table. Returns
/// false when a converted model does not compute what its simulation promised (its predictions
/// differ on more than 0.1 % of the test set) or the reloaded model differs from the saved one.
bool run_full_flow();
