// sum: adds the bytes of /input/a and /input/b and writes the total to
// /output/sum. A small, fast program for protocol tests and benchmarks.
// Build: clang --target=wasm32-wasi -O2 -Wl,--strip-all -o sum.wasm sum.c
#include <stdio.h>

int main(void) {
	const char *names[2] = {"/input/a", "/input/b"};
	long sum = 0;
	for (int i = 0; i < 2; i++) {
		FILE *f = fopen(names[i], "rb");
		if (!f) return 3;
		int c;
		while ((c = fgetc(f)) != EOF) sum += c;
		fclose(f);
	}
	FILE *o = fopen("/output/sum", "w");
	if (!o) return 4;
	fprintf(o, "%ld\n", sum);
	return fclose(o) == 0 ? 0 : 5;
}
