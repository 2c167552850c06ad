// spin: burns CPU for a few seconds, then writes /output/sum like sum.c.
// It keeps a run in progress long enough for restart tests to stop the
// node in the middle of it.
// Build: clang --target=wasm32-wasi -O2 -Wl,--strip-all -o spin.wasm spin.c
#include <stdio.h>

int main(void) {
	volatile unsigned long x = 0;
	for (unsigned long i = 0; i < 1000000000UL; i++) x += i;
	FILE *o = fopen("/output/sum", "w");
	if (!o) return 4;
	fprintf(o, "%lu\n", (unsigned long)x);
	return fclose(o) == 0 ? 0 : 5;
}
