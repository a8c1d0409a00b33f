/* hash.c: 64-bit string hash, integer mixer and CRC-32C. */
#include "util.h"

uint64_t ut_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t ut_rand_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ULL;
    return ut_mix64(*state);
}

uint64_t ut_hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ ut_mix64(seed + len);
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    /* FNV-1a alone mixes the high bits poorly; the finalizer spreads every
     * input bit over the whole word, which the hash ring relies on. */
    return ut_mix64(h);
}

static uint32_t crc32c_table[8][256];
static int crc32c_ready;

static void crc32c_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78U : c >> 1;
        crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc32c_table[t][n] =
                (crc32c_table[t - 1][n] >> 8) ^ crc32c_table[0][crc32c_table[t - 1][n] & 0xff];
    __atomic_store_n(&crc32c_ready, 1, __ATOMIC_RELEASE);
}

uint32_t ut_crc32c(uint32_t crc, const void *data, size_t len)
{
    /* Building the table twice from two threads writes the same bytes, so
     * the race is benign; the flag only saves the work. */
    if (!__atomic_load_n(&crc32c_ready, __ATOMIC_ACQUIRE)) crc32c_init();
    const unsigned char *p = data;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
              crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
              crc32c_table[3][p[4]] ^ crc32c_table[2][p[5]] ^ crc32c_table[1][p[6]] ^
              crc32c_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}
