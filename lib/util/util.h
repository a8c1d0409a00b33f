/*
 * util.h: small shared pieces every module uses: hashing, a string-keyed
 * hash map, a growable byte buffer, clocks, and logging through the
 * embedder's callback.
 */
#ifndef DSYNC_UTIL_H
#define DSYNC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsync/config.h"

/* ---- hashing ----------------------------------------------------------- */

/* A well-mixed 64-bit hash of len bytes (FNV-1a folded through a 64-bit
 * finalizer); the same on every machine and run. */
uint64_t ut_hash64(const void *data, size_t len, uint64_t seed);
/* A 64-bit mixer for integers (splitmix64's finalizer). */
uint64_t ut_mix64(uint64_t x);
/* The next number of the seeded generator whose state is *state
 * (splitmix64): the same sequence from the same seed on every machine, so
 * a simulation's seed reproduces its run. */
uint64_t ut_rand_next(uint64_t *state);
/* CRC-32C (Castagnoli) of len bytes, continuing from crc (start with 0). */
uint32_t ut_crc32c(uint32_t crc, const void *data, size_t len);

/* ---- string-keyed hash map ------------------------------------------- */

/* Open addressing with linear probing and backward-shift deletion. Keys are
 * copied into the map; values are the caller's pointers. */
typedef struct {
    char *key;
    uint64_t hash;
    void *value;
} ut_map_slot;

typedef struct {
    ut_map_slot *slots;
    size_t cap;   /* power of two, or 0 */
    size_t count; /* live entries */
} ut_map;

void ut_map_init(ut_map *m);
/* Frees the map's own memory (slots and key copies), not the values. */
void ut_map_close(ut_map *m);
void *ut_map_get(const ut_map *m, const char *key);
/* Inserts or replaces. Returns 0, or DSYNC_ENOMEM with the map unchanged. */
int ut_map_put(ut_map *m, const char *key, void *value);
/* Removes key; returns its value, or NULL when absent. */
void *ut_map_del(ut_map *m, const char *key);
/* Iteration: for (size_t i = 0; ut_map_next(m, &i, &k, &v);) ... Do not
 * insert while iterating; deleting the current key is not allowed either. */
bool ut_map_next(const ut_map *m, size_t *iter, const char **key, void **value);

/* ---- byte buffer ------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool oom; /* an append failed; the buffer holds what fit before it */
} ut_buf;

void ut_buf_init(ut_buf *b);
void ut_buf_free(ut_buf *b);
int ut_buf_reserve(ut_buf *b, size_t extra);
int ut_buf_append(ut_buf *b, const void *data, size_t len);
int ut_buf_puts(ut_buf *b, const char *s);
int ut_buf_printf(ut_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends v in decimal ("-" first when negative), as "%" PRId64 would,
 * without printf's machinery (hot paths format several numbers per call). */
int ut_buf_put_dec(ut_buf *b, int64_t v);
/* v in decimal into out (no NUL); how many digits, 1 to 20. */
size_t ut_u64_dec(char out[20], uint64_t v);
/* Hands the NUL-terminated contents to the caller and resets the buffer.
 * NULL if an append had failed (the buffer is freed). */
char *ut_buf_detach(ut_buf *b, size_t *len);

/* ---- JSON (json.c) ------------------------------------------------------ */

/* Whether s[0..len) is well-formed UTF-8 (RFC 3629: no overlong form, no
 * surrogate, nothing above U+10FFFF; NUL bytes are fine), as jansson
 * judges a string. */
bool ut_utf8_valid(const char *s, size_t len);
/* Appends s[0..len) (valid UTF-8) as a JSON string literal, quotes
 * included, escaped as jansson's dump does it: ", \ and the control
 * characters; everything else as it is. DSYNC_ENOMEM (and b->oom) when it
 * could not grow. */
int ut_buf_json_str(ut_buf *b, const char *s, size_t len);

/* ---- little-endian encoding ------------------------------------------ */

/* Fixed-width little-endian integers in and out of raw bytes. */
void ut_put_le(unsigned char *p, uint64_t v, int bytes);
uint64_t ut_get_le(const unsigned char *p, int bytes);
/* Appends v as `bytes` little-endian bytes; a failure sets b->oom. */
void ut_buf_put_le(ut_buf *b, uint64_t v, int bytes);
/* Appends a string as u16 length + bytes. */
void ut_buf_put_str16(ut_buf *b, const char *s);

/* A bounds-checked reader: any short read sets bad and yields zeros. */
typedef struct {
    const unsigned char *p;
    size_t left;
    bool bad;
} ut_reader;

uint64_t ut_read_le(ut_reader *r, int bytes);
/* Reads a u16-length string of 1..max bytes without NULs into out
 * (max + 1 bytes); anything else sets bad. */
void ut_read_str16(ut_reader *r, char *out, size_t max);

/* ---- time ------------------------------------------------------------- */

/* Milliseconds and nanoseconds of CLOCK_MONOTONIC. */
uint64_t ut_now_ms(void);
uint64_t ut_now_ns(void);
/* Milliseconds since the Unix epoch (wall clock). */
uint64_t ut_wall_ms(void);

/* ---- logging ---------------------------------------------------------- */

typedef struct {
    dsync_log_fn fn;
    void *ctx;
    dsync_log_level level;
} ut_logger;

void ut_log(const ut_logger *lg, dsync_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- strings ---------------------------------------------------------- */

/* strdup that returns NULL on failure (strdup is not C11). */
char *ut_strdup(const char *s);
/* Copies at most cap-1 bytes and NUL-terminates; returns -1 if truncated. */
int ut_strlcpy(char *dst, const char *src, size_t cap);

#endif
