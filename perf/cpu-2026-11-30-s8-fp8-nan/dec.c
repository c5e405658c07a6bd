// Session 8: the FP8 loops with and without the NaN fold, with the scale per element or factored out
// of each span's sum (perf/NOTES.md steps 16-17); session 7's MXFP4, FP8 and bf16 loops otherwise.
// In-L1 throughput of the fast backend's decode steps (one row of activations, 4 weight rows):
// the same instruction mix as cpu::fast::avx512's tile<_, 1, 4>, over 4 rows of 4 KB of codes
// that stay in L1, so memory plays no part. Prints GB/s of weight bytes for one core.
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#define ROWB 2048   /* bytes of codes per row per pass */
static uint8_t codes[4][ROWB] __attribute__((aligned(64)));
static float scales[4][ROWB] __attribute__((aligned(64)));
static float x[2 * ROWB * 2] __attribute__((aligned(64)));
static uint16_t wb[4][ROWB / 2] __attribute__((aligned(64)));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static const float E2M1[16] = {0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6};
__attribute__((noinline)) float mxfp4(int passes) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  __m512 e2 = _mm512_loadu_ps(E2M1);
  __m512i ev = _mm512_setr_epi32(0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30), od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
  for (int p = 0; p < passes; p++)
    for (int b = 0; b < ROWB; b += 16) {   /* one step: 32 columns, one group of 32 */
      __m512 x0 = _mm512_loadu_ps(x + 2 * b), x1 = _mm512_loadu_ps(x + 2 * b + 16);
      __m512 xe = _mm512_permutex2var_ps(x0, ev, x1), xo = _mm512_permutex2var_ps(x0, od, x1);
      for (int j = 0; j < 4; j++) {
        __m512 t = _mm512_mul_ps(e2, _mm512_set1_ps(scales[j][b / 16]));
        __m512i by = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes[j] + b)));
        __m512 we = _mm512_maskz_permutexvar_ps(0xffff, by, t);
        __m512 wo = _mm512_maskz_permutexvar_ps(0xffff, _mm512_srli_epi32(by, 4), t);
        acc[j] = _mm512_fmadd_ps(xe, we, acc[j]);
        acc[j] = _mm512_fmadd_ps(xo, wo, acc[j]);
      }
    }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}
__attribute__((noinline)) float fp8(int passes, int fold) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int p = 0; p < passes; p++)
    for (int b = 0; b < ROWB; b += 32) {   /* one step: 32 columns; a scale per 128 */
      __m512 x0 = _mm512_loadu_ps(x + b), x1 = _mm512_loadu_ps(x + b + 16);
      for (int j = 0; j < 4; j++) {
        __m512 s = _mm512_set1_ps(scales[j][b / 128]);
        __m512i h = _mm512_slli_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(codes[j] + b))), 7);
        if (fold) {
        __m512i y = _mm512_add_epi16(h, _mm512_set1_epi16(0x80));
        h = _mm512_ternarylogic_epi32(h, y, _mm512_set1_epi16((short)0xbf80), 0xb4);
        } else h = _mm512_and_si512(h, _mm512_set1_epi16((short)0xbf80));
        __m512 w0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), s);
        __m512 w1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), s);
        acc[j] = _mm512_fmadd_ps(x0, w0, acc[j]);
        acc[j] = _mm512_fmadd_ps(x1, w1, acc[j]);
      }
    }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

__attribute__((noinline)) float fp8f(int passes, int fold) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int p = 0; p < passes; p++)
    for (int g = 0; g < ROWB; g += 128) {
      __m512 part[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int b = g; b < g + 128; b += 32) {
      __m512 x0 = _mm512_loadu_ps(x + b), x1 = _mm512_loadu_ps(x + b + 16);
      for (int j = 0; j < 4; j++) {
        __m512i h = _mm512_slli_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(codes[j] + b))), 7);
        if (fold) {
        __m512i y = _mm512_add_epi16(h, _mm512_set1_epi16(0x80));
        h = _mm512_ternarylogic_epi32(h, y, _mm512_set1_epi16((short)0xbf80), 0xb4);
        } else h = _mm512_and_si512(h, _mm512_set1_epi16((short)0xbf80));
        __m512 w0 = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
        __m512 w1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
        part[j] = _mm512_fmadd_ps(x0, w0, part[j]);
        part[j] = _mm512_fmadd_ps(x1, w1, part[j]);
      }
      }
      for (int j = 0; j < 4; j++) acc[j] = _mm512_fmadd_ps(part[j], _mm512_set1_ps(scales[j][g / 128]), acc[j]);
    }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}
__attribute__((noinline)) float bf16(int passes) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int p = 0; p < passes; p++)
    for (int c = 0; c < ROWB / 2; c += 32) {   /* one step: 32 columns, 64 bytes */
      __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)((const uint16_t *)x + c));
      for (int j = 0; j < 4; j++)
        acc[j] = _mm512_dpbf16_ps(acc[j], xv, (__m512bh)_mm512_loadu_si512((const void *)(wb[j] + c)));
    }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}
int main(void) {
  for (int j = 0; j < 4; j++) for (int b = 0; b < ROWB; b++) { codes[j][b] = (b * 37 + j) & 0x7e; scales[j][b] = 0.01f; }
  for (int i = 0; i < 4 * ROWB; i++) x[i] = 0.001f * (i % 7);
  int passes = 200000; float sink = 0;
  for (int r = 0; r < 3; r++) {
    double t = now(); sink += mxfp4(passes); t = now() - t;
    printf("MXFP4 (16 B codes + 4 B scale a row-step): %.1f GB/s\n", 4.0 * ROWB * 1.25 * passes / t / 1e9);
    t = now(); sink += fp8(passes, 1); t = now() - t;
    printf("FP8 (32 B codes a row-step, a scale per 128): %.1f GB/s\n", 4.0 * ROWB * (1 + 4.0 / 128) * passes / t / 1e9);
    t = now(); sink += fp8(passes, 0); t = now() - t;
    printf("FP8 scaled per element, no fold: %.1f GB/s\n", 4.0 * ROWB * (1 + 4.0 / 128) * passes / t / 1e9);
    t = now(); sink += fp8f(passes, 1); t = now() - t;
    printf("FP8 factored, NaN fold: %.1f GB/s\n", 4.0 * ROWB * (1 + 4.0 / 128) * passes / t / 1e9);
    t = now(); sink += fp8f(passes, 0); t = now() - t;
    printf("FP8 factored, no fold: %.1f GB/s\n", 4.0 * ROWB * (1 + 4.0 / 128) * passes / t / 1e9);
    t = now(); sink += bf16(passes); t = now() - t;
    printf("bf16 (64 B a row-step): %.1f GB/s\n", 4.0 * ROWB * passes / t / 1e9);
  }
  return sink == 12345;
}
