/*
 * The C side of the kernels benchmark: the same algorithms as package
 * bench/kernels/kernel, producing the same checksums.
 *
 *   kernels KERNEL SIZE [DOC]
 *
 * KERNEL is none, intloop, matmul, sha256, sort, nn, json (which parses the
 * file DOC, default /input/doc.json, into a tree and folds it) or groupby
 * (which aggregates the CSV file DOC, default /input/data.csv). aesgcm has
 * no C version (C has no AES in its standard library). With
 * -DCLOISTER_ACCEL (and -I guest/c) sha256, sort and matmul use the host primitives
 * of cloister_accel.h. Built by the
 * benchmark with clang --target=wasm32-wasi -O2 and natively with gcc -O2.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef CLOISTER_ACCEL
#include "cloister_accel.h" /* guest/c: SHA-256, sort and matmul by the host */
#endif

static uint64_t rng_state;
static uint64_t next(void) {
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t intloop(long n) {
	uint64_t x = 88172645463325252ULL, acc = 0;
	for (long i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if ((x & 1) == 0)
			acc += x >> 3;
		else
			acc ^= x * 31;
	}
	return acc;
}

static uint64_t matmul(long n) {
	double *a = malloc(n * n * sizeof *a), *b = malloc(n * n * sizeof *b), *c = calloc(n * n, sizeof *c);
	if (!a || !b || !c) { fputs("out of memory\n", stderr); exit(1); }
	rng_state = 42;
	for (long i = 0; i < n * n; i++) a[i] = (double)(next() >> 11) / 9007199254740992.0;
	for (long i = 0; i < n * n; i++) b[i] = (double)(next() >> 11) / 9007199254740992.0;
#ifdef CLOISTER_ACCEL
	if (cloister_matmul_f64(a, b, c, n, n, n) != CLOISTER_ACCEL_OK) { fputs("matmul refused\n", stderr); exit(1); }
#else
	for (long i = 0; i < n; i++)
		for (long k = 0; k < n; k++) {
			double aik = a[i * n + k];
			double *ci = c + i * n, *bk = b + k * n;
			for (long j = 0; j < n; j++) ci[j] += aik * bk[j];
		}
#endif
	double sum = 0;
	for (long i = 0; i < n * n; i++) sum += c[i];
	uint64_t bits;
	memcpy(&bits, &sum, 8);
	free(a); free(b); free(c);
	return bits;
}

/* SHA-256 (FIPS 180-4), portable C, no SIMD: what a Wasm guest can do. */
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha256_block(uint32_t h[8], const uint8_t *p) {
	uint32_t w[64];
	for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static uint64_t sha256(long rounds) {
	const size_t size = 1 << 20;
	uint8_t *buf = malloc(size);
	if (!buf) { fputs("out of memory\n", stderr); exit(1); }
	rng_state = 42;
	for (size_t i = 0; i + 8 <= size; i += 8) {
		uint64_t v = next();
		for (int j = 0; j < 8; j++) buf[i + j] = (uint8_t)(v >> (8 * j));
	}
#ifdef CLOISTER_ACCEL
	/* The host primitive hashes the stream as it comes, a round at a time. */
	cloister_sha256_state st;
	uint8_t d[32];
	if (cloister_sha256_init(&st) != CLOISTER_ACCEL_OK) { fputs("sha256 refused\n", stderr); exit(1); }
	for (long r = 0; r < rounds; r++)
		if (cloister_sha256_update(&st, buf, size) != CLOISTER_ACCEL_OK) { fputs("sha256 refused\n", stderr); exit(1); }
	if (cloister_sha256_final(&st, d) != CLOISTER_ACCEL_OK) { fputs("sha256 refused\n", stderr); exit(1); }
	free(buf);
	return (uint64_t)d[0] << 56 | (uint64_t)d[1] << 48 | (uint64_t)d[2] << 40 | (uint64_t)d[3] << 32 |
	       (uint64_t)d[4] << 24 | (uint64_t)d[5] << 16 | (uint64_t)d[6] << 8 | d[7];
#endif
	uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	/* 1 MiB is a whole number of 64-byte blocks, so rounds of it need no
	 * buffering between them. */
	for (long r = 0; r < rounds; r++)
		for (size_t i = 0; i < size; i += 64) sha256_block(h, buf + i);
	uint8_t pad[64] = {0x80};
	uint64_t bits = (uint64_t)rounds * size * 8;
	for (int j = 0; j < 8; j++) pad[63 - j] = (uint8_t)(bits >> (8 * j));
	sha256_block(h, pad);
	free(buf);
	return (uint64_t)h[0] << 32 | h[1];
}

static int cmp_u64(const void *a, const void *b) {
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static uint64_t sort(long n) {
	uint64_t *a = malloc(n * sizeof *a);
	if (!a && n) { fputs("out of memory\n", stderr); exit(1); }
	rng_state = 42;
	for (long i = 0; i < n; i++) a[i] = next();
#ifdef CLOISTER_ACCEL
	if (cloister_sort_u64(a, n) != CLOISTER_ACCEL_OK) { fputs("sort refused\n", stderr); exit(1); }
#else
	qsort(a, n, sizeof *a, cmp_u64);
#endif
	uint64_t sum = 0;
	for (long i = 0; i < n; i++) sum += a[i] * (uint64_t)(i + 1);
	free(a);
	return sum;
}

/*
 * JSON: a small, complete recursive-descent parser that builds a tree (as
 * encoding/json does into interface values), then the same fold as the Go
 * kernel. Strings are unescaped copies; numbers go through strtod.
 */
enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct node {
	int type;
	double num;
	char *str; /* J_STR value; the key for members of an object */
	size_t len;
	char *key;
	size_t keylen;
	struct node *child, *next;
} node;

typedef struct { const char *p, *end; } parser;
static void fail(const char *what) { fprintf(stderr, "json: %s\n", what); exit(1); }
static void ws(parser *ps) { while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++; }

static char *parse_string(parser *ps, size_t *len) {
	if (ps->p >= ps->end || *ps->p != '"') fail("expected string");
	const char *s = ++ps->p;
	while (ps->p < ps->end && *ps->p != '"') {
		if (*ps->p == '\\') ps->p++;
		ps->p++;
	}
	if (ps->p >= ps->end) fail("unterminated string");
	char *out = malloc(ps->p - s + 1), *o = out;
	for (const char *q = s; q < ps->p; q++) {
		if (*q != '\\') { *o++ = *q; continue; }
		switch (*++q) {
		case 'n': *o++ = '\n'; break;
		case 't': *o++ = '\t'; break;
		case 'r': *o++ = '\r'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'u': fail("\\u escapes not used by the benchmark document"); break;
		default: *o++ = *q;
		}
	}
	ps->p++;
	*len = o - out;
	return out;
}

static node *parse_value(parser *ps) {
	ws(ps);
	if (ps->p >= ps->end) fail("unexpected end");
	node *n = calloc(1, sizeof *n);
	char c = *ps->p;
	if (c == '{' || c == '[') {
		n->type = c == '{' ? J_OBJ : J_ARR;
		ps->p++;
		ws(ps);
		node **tail = &n->child;
		if (ps->p < ps->end && *ps->p == (c == '{' ? '}' : ']')) { ps->p++; return n; }
		for (;;) {
			char *key = NULL;
			size_t keylen = 0;
			if (c == '{') {
				ws(ps);
				key = parse_string(ps, &keylen);
				ws(ps);
				if (ps->p >= ps->end || *ps->p++ != ':') fail("expected ':'");
			}
			node *m = parse_value(ps);
			m->key = key;
			m->keylen = keylen;
			*tail = m;
			tail = &m->next;
			ws(ps);
			if (ps->p >= ps->end) fail("unexpected end");
			if (*ps->p == ',') { ps->p++; continue; }
			if (*ps->p++ != (c == '{' ? '}' : ']')) fail("expected ',' or close");
			return n;
		}
	}
	if (c == '"') { n->type = J_STR; n->str = parse_string(ps, &n->len); return n; }
	if (!strncmp(ps->p, "true", 4)) { n->type = J_TRUE; ps->p += 4; return n; }
	if (!strncmp(ps->p, "false", 5)) { n->type = J_FALSE; ps->p += 5; return n; }
	if (!strncmp(ps->p, "null", 4)) { n->type = J_NULL; ps->p += 4; return n; }
	char *e;
	n->type = J_NUM;
	n->num = strtod(ps->p, &e);
	if (e == ps->p) fail("bad value");
	ps->p = e;
	return n;
}

static void free_tree(node *n) {
	while (n) {
		node *next = n->next;
		free_tree(n->child);
		free(n->str);
		free(n->key);
		free(n);
		n = next;
	}
}

static node *member(node *obj, const char *key) {
	size_t kl = strlen(key);
	for (node *m = obj->child; m; m = m->next)
		if (m->keylen == kl && !memcmp(m->key, key, kl)) return m;
	return NULL;
}

static uint64_t json(const char *path) {
	FILE *f = fopen(path, "rb");
	if (!f) { perror(path); exit(1); }
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *doc = malloc(size + 1);
	if (!doc || fread(doc, 1, size, f) != (size_t)size) fail("read failed");
	fclose(f);
	parser ps = {doc, doc + size};
	node *root = parse_value(&ps);
	if (root->type != J_ARR) fail("document is not an array");
	uint64_t sum = 0;
	for (node *r = root->child; r; r = r->next) {
		node *v;
		if ((v = member(r, "id")) && v->type == J_NUM) sum += (uint64_t)v->num;
		if ((v = member(r, "name")) && v->type == J_STR) sum += v->len;
		if ((v = member(r, "score")) && v->type == J_NUM) sum += (uint64_t)(v->num * 4);
		if ((v = member(r, "active")) && v->type == J_TRUE) sum++;
		if ((v = member(r, "tags")) && v->type == J_ARR)
			for (node *t = v->child; t; t = t->next)
				if (t->type == J_STR) sum += t->len;
	}
	free_tree(root);
	free(doc);
	return sum;
}

static float weight(void) { return (float)((int64_t)(next() >> 40) - (1 << 23)) / (float)(1 << 26); }

static uint64_t nn(long n) {
	enum { side = 28, k = 3, filters = 8, conv = side - k + 1, flat = filters * conv * conv, hidden = 64, outputs = 10 };
	rng_state = 42;
	static float cw[filters * k * k], w1[hidden * flat], w2[outputs * hidden], img[side * side], act[flat], h[hidden];
	for (int i = 0; i < filters * k * k; i++) cw[i] = weight();
	for (int i = 0; i < hidden * flat; i++) w1[i] = weight();
	for (int i = 0; i < outputs * hidden; i++) w2[i] = weight();
	float sum = 0;
	for (long im = 0; im < n; im++) {
		for (int i = 0; i < side * side; i++) img[i] = (float)(next() >> 40) / (float)(1 << 24);
		for (int f = 0; f < filters; f++)
			for (int y = 0; y < conv; y++)
				for (int x = 0; x < conv; x++) {
					float s = 0;
					for (int dy = 0; dy < k; dy++)
						for (int dx = 0; dx < k; dx++) s += img[(y + dy) * side + x + dx] * cw[f * k * k + dy * k + dx];
					act[(f * conv + y) * conv + x] = s > 0 ? s : 0;
				}
		for (int j = 0; j < hidden; j++) {
			float s = 0;
			const float *row = w1 + (long)j * flat;
			for (int i = 0; i < flat; i++) s += act[i] * row[i];
			h[j] = s > 0 ? s : 0;
		}
		for (int o = 0; o < outputs; o++) {
			float s = 0;
			for (int j = 0; j < hidden; j++) s += h[j] * w2[o * hidden + j];
			sum += s;
		}
	}
	uint32_t bits;
	memcpy(&bits, &sum, 4);
	return bits;
}

/* groupby: an open-addressing hash table of keys (at most 15 bytes). */
typedef struct { char key[16]; uint64_t sum, count; int used; } group;
#define GROUPS 65536
static group groups[GROUPS];
static int cmp_group(const void *a, const void *b) { return strcmp(((const group *)a)->key, ((const group *)b)->key); }

static uint64_t groupby(const char *path) {
	FILE *f = fopen(path, "r");
	if (!f) { perror(path); exit(1); }
	static char line[256];
	if (!fgets(line, sizeof line, f)) { fputs("groupby: no header\n", stderr); exit(1); }
	while (fgets(line, sizeof line, f)) {
		char *comma = strchr(line, ',');
		if (!comma || comma - line > 15) { fputs("groupby: bad row\n", stderr); exit(1); }
		size_t klen = comma - line;
		char *dot = strchr(comma, '.');
		if (!dot) { fputs("groupby: bad amount\n", stderr); exit(1); }
		uint64_t whole = strtoull(comma + 1, NULL, 10), frac = strtoull(dot + 1, NULL, 10);
		uint64_t hsh = 1469598103934665603ULL;
		for (size_t i = 0; i < klen; i++) hsh = (hsh ^ (unsigned char)line[i]) * 1099511628211ULL;
		size_t slot = hsh & (GROUPS - 1);
		while (groups[slot].used && (strncmp(groups[slot].key, line, klen) || groups[slot].key[klen])) slot = (slot + 1) & (GROUPS - 1);
		if (!groups[slot].used) { groups[slot].used = 1; memcpy(groups[slot].key, line, klen); groups[slot].key[klen] = 0; }
		groups[slot].sum += whole * 100 + frac;
		groups[slot].count++;
	}
	fclose(f);
	size_t n = 0;
	for (size_t i = 0; i < GROUPS; i++) if (groups[i].used) groups[n++] = groups[i];
	qsort(groups, n, sizeof(group), cmp_group);
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++) sum += (uint64_t)(i + 1) * (groups[i].sum + groups[i].count);
	return sum;
}

int main(int argc, char **argv) {
	if (argc < 3) { fputs("usage: kernels KERNEL SIZE [DOC]\n", stderr); return 2; }
	long n = strtol(argv[2], NULL, 10);
	const char *k = argv[1];
	uint64_t sum = 0;
	if (!strcmp(k, "none")) sum = 0;
	else if (!strcmp(k, "intloop")) sum = intloop(n);
	else if (!strcmp(k, "matmul")) sum = matmul(n);
	else if (!strcmp(k, "sha256")) sum = sha256(n);
	else if (!strcmp(k, "sort")) sum = sort(n);
	else if (!strcmp(k, "nn")) sum = nn(n);
	else if (!strcmp(k, "json")) sum = json(argc > 3 ? argv[3] : "/input/doc.json");
	else if (!strcmp(k, "groupby")) sum = groupby(argc > 3 ? argv[3] : "/input/data.csv");
	else { fprintf(stderr, "unknown kernel %s\n", k); return 2; }
	printf("%" PRIu64 "\n", sum);
	return 0;
}
