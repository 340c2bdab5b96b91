/**
 * Python's and NumPy's summation orders, copied so that routes match the Python implementation
 * bit for bit (floating-point addition is not associative): NumPy sums a contiguous run
 * pairwise, in blocks of eight, and Python's built-in `sum` adds left to right.
 */

/** NumPy's float32 pairwise sum of `a[start .. start + n]` (umath `pairwise_sum`). */
export function pairwiseSum32(a: ArrayLike<number>, start: number, n: number): number {
  const f = Math.fround;
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res = f(res + a[start + i]!);
    return res;
  }
  if (n <= 128) {
    const r = [0, 1, 2, 3, 4, 5, 6, 7].map(j => f(a[start + j]!));
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] = f(r[j]! + a[start + i + j]!);
    let res = f(f(f(r[0]! + r[1]!) + f(r[2]! + r[3]!)) + f(f(r[4]! + r[5]!) + f(r[6]! + r[7]!)));
    for (; i < n; i++) res = f(res + a[start + i]!);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return f(pairwiseSum32(a, start, n2) + pairwiseSum32(a, start + n2, n - n2));
}

/** The same pairwise order in float64 (no rounding to float32). */
function pairwiseSum64(a: Float64Array, start: number, n: number): number {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res += a[start + i]!;
    return res;
  }
  if (n <= 128) {
    const r = [a[start]!, a[start + 1]!, a[start + 2]!, a[start + 3]!, a[start + 4]!, a[start + 5]!, a[start + 6]!, a[start + 7]!];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j]! += a[start + i + j]!;
    let res = (r[0]! + r[1]! + (r[2]! + r[3]!)) + (r[4]! + r[5]! + (r[6]! + r[7]!)); // ((01)(23))((45)(67))
    for (; i < n; i++) res += a[start + i]!;
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum64(a, start, n2) + pairwiseSum64(a, start + n2, n - n2);
}

/** `float(x.sum(dtype=np.float64))` of a float32 array: cast in 8192-item buffers, each summed
 * pairwise and added to the running total. */
export function numpySum64(a: Float64Array, count: number): number {
  let total = 0;
  for (let start = 0; start < count; start += 8192) total += pairwiseSum64(a, start, Math.min(8192, count - start));
  return total;
}

/** Python's built-in `sum` of floats: left to right from 0 (CPython 3.11, the project's). */
export function pySum(values: readonly number[]): number {
  let total = 0;
  for (const v of values) total += v;
  return total;
}
