// Builds the precompiled header shared by every test program.
