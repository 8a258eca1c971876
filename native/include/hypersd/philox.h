// Philox4x32-10 counter-based random numbers, shared verbatim by the CPU and CUDA kernels.
//
// Element i of a draw uses counter (i/4 low, i/4 high, offset low, offset high) and key (seed low, seed high),
// and takes lane i%4 of the four 32-bit outputs. Uniform = (u >> 8) * 2^-24 in [0, 1). Normal = Box-Muller on
// lanes (0,1) and (2,3): r = sqrt(-2 log u1), u1 in (0, 1]; lanes 0/2 take r cos(2 pi u2), lanes 1/3 r sin.
// log, sin and cos are our own polynomials written with explicit fmaf, IEEE division and sqrtf, so the CPU
// (C++ fmaf is exact) and CUDA (no fast-math) produce bit-identical floats for the same seed and offset.
#pragma once
#include <cmath>
#include <cstdint>

#include "hypersd/hd.h"

namespace hsd {
namespace philox {

struct U4 { uint32_t x, y, z, w; };

HSD_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = (uint64_t)a * (uint64_t)b;
  hi = (uint32_t)(p >> 32);
  lo = (uint32_t)p;
}

HSD_HD U4 philox4x32_10(U4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c.x, hi0, lo0);
    mulhilo(0xCD9E8D57u, c.z, hi1, lo1);
    c = U4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

HSD_HD float uniform01(uint32_t u) { return (float)(u >> 8) * 5.9604644775390625e-08f; }        // [0,1)
HSD_HD float uniform_open0(uint32_t u) { return (float)((u >> 8) + 1u) * 5.9604644775390625e-08f; } // (0,1]

// Natural log for x in (0, 1]: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s), s = (m-1)/(m+1).
HSD_HD float logf_det(float x) {
  int e = 0;
  // frexp by hand on the bits (x is a normal positive float here: x >= 2^-24).
  uint32_t b;
  __builtin_memcpy(&b, &x, 4);
  e = (int)((b >> 23) & 0xff) - 126;
  b = (b & 0x007fffffu) | 0x3f000000u;  // m in [0.5, 1)
  float m;
  __builtin_memcpy(&m, &b, 4);
  if (m < 0.70710678f) { m = m * 2.0f; e -= 1; }
  float s = (m - 1.0f) / (m + 1.0f);
  float s2 = s * s;
  // 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + s^7/7 + s^9/9), |s| <= 0.1716
  float p = fmaf(s2, 0.11111111f, 0.14285715f);
  p = fmaf(s2, p, 0.2f);
  p = fmaf(s2, p, 0.33333334f);
  p = fmaf(s2, p, 1.0f);
  float lm = 2.0f * s * p;
  return fmaf((float)e, 0.693147182f, lm);
}

// sin and cos of 2 pi t for t in [0, 1).
HSD_HD void sincos2pi_det(float t, float& s, float& c) {
  float x = t * 4.0f;                 // quarter turns, exact
  float k = rintf(x);
  float r = (x - k) * 1.57079637f;    // in [-pi/4, pi/4]
  float r2 = r * r;
  float sp = fmaf(r2, 2.75573192e-06f, -1.98412698e-04f);
  sp = fmaf(r2, sp, 8.33333333e-03f);
  sp = fmaf(r2, sp, -1.66666667e-01f);
  float sr = fmaf(r * r2, sp, r);
  float cp = fmaf(r2, 2.48015873e-05f, -1.38888889e-03f);
  cp = fmaf(r2, cp, 4.16666667e-02f);
  cp = fmaf(r2, cp, -0.5f);
  float cr = fmaf(r2, cp, 1.0f);
  int q = ((int)k) & 3;
  if (q == 0) { s = sr; c = cr; }
  else if (q == 1) { s = cr; c = -sr; }
  else if (q == 2) { s = -sr; c = -cr; }
  else { s = -cr; c = sr; }
}

// Value of element i for a seed and offset. normal != 0: N(0,1); otherwise U[0,1).
HSD_HD float element(uint64_t seed, uint64_t offset, uint64_t i, int normal) {
  uint64_t g = i >> 2;
  U4 r = philox4x32_10(U4{(uint32_t)g, (uint32_t)(g >> 32), (uint32_t)offset, (uint32_t)(offset >> 32)},
                       (uint32_t)seed, (uint32_t)(seed >> 32));
  int lane = (int)(i & 3);
  if (!normal) {
    uint32_t v = lane == 0 ? r.x : lane == 1 ? r.y : lane == 2 ? r.z : r.w;
    return uniform01(v);
  }
  uint32_t a = lane < 2 ? r.x : r.z, b = lane < 2 ? r.y : r.w;
  float rad = sqrtf(-2.0f * logf_det(uniform_open0(a)));
  float s, c;
  sincos2pi_det(uniform01(b), s, c);
  return (lane & 1) ? rad * s : rad * c;
}

// All four lanes of group g (elements 4g..4g+3), exactly the values element() gives each of them.
HSD_HD void block4(uint64_t seed, uint64_t offset, uint64_t g, int normal, float out[4]) {
  U4 r = philox4x32_10(U4{(uint32_t)g, (uint32_t)(g >> 32), (uint32_t)offset, (uint32_t)(offset >> 32)},
                       (uint32_t)seed, (uint32_t)(seed >> 32));
  if (!normal) {
    out[0] = uniform01(r.x); out[1] = uniform01(r.y); out[2] = uniform01(r.z); out[3] = uniform01(r.w);
    return;
  }
  float s, c;
  float rad = sqrtf(-2.0f * logf_det(uniform_open0(r.x)));
  sincos2pi_det(uniform01(r.y), s, c);
  out[0] = rad * c; out[1] = rad * s;
  rad = sqrtf(-2.0f * logf_det(uniform_open0(r.z)));
  sincos2pi_det(uniform01(r.w), s, c);
  out[2] = rad * c; out[3] = rad * s;
}

}  // namespace philox
}  // namespace hsd
