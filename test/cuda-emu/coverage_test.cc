// Placeholder: filled in with the coverage CUDA kernels' tests.
#include "check.h"
#include "tokensieve/diversity.h"

int main() { return emu_test::finish(); }
