#pragma once

/// Trains a small classifier, quantizes it with PTQ and with QAT, converts both to INT8, and
/// saves / reloads the INT8 model, printing every pass's report and an accuracy table.
void run_full_flow();
