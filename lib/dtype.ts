/**
 * Element types and conversions. f16 and bf16 data live in a Uint16Array,
 * so a host tensor holding them must name its dtype explicitly.
 */
import { invalid, makeError } from './errors';

export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'i64' | 'i8' | 'u8';
export type FloatDType = 'f32' | 'f16' | 'bf16';

export type HostData = Float32Array | Uint16Array | Int32Array | BigInt64Array | Int8Array | Uint8Array;

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'i64', 'i8', 'u8'];
export const FLOAT_DTYPES: readonly FloatDType[] = ['f32', 'f16', 'bf16'];

/** Numeric codes shared with the native binding (include/tokensieve/tensor.h). */
export const DTYPE_CODE: Record<DType, number> = { f32: 0, f16: 1, bf16: 2, i32: 3, i64: 4, i8: 5, u8: 6 };

export const DTYPE_SIZE: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4, i64: 8, i8: 1, u8: 1 };

type HostCtor = { new (n: number): HostData; readonly name: string };
export const DTYPE_ARRAY: Record<DType, HostCtor> = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
  i64: BigInt64Array,
  i8: Int8Array,
  u8: Uint8Array,
};

export function isDType(v: unknown): v is DType {
  return typeof v === 'string' && (DTYPES as readonly string[]).includes(v);
}

export function isFloatDType(v: unknown): v is FloatDType {
  return v === 'f32' || v === 'f16' || v === 'bf16';
}

/** The dtype a TypedArray implies, or the list it allows when ambiguous. */
export function dtypesForArray(data: ArrayBufferView): readonly DType[] {
  if (data instanceof Float32Array) return ['f32'];
  if (data instanceof Uint16Array) return ['f16', 'bf16'];
  if (data instanceof Int32Array) return ['i32'];
  if (data instanceof BigInt64Array) return ['i64'];
  if (data instanceof Int8Array) return ['i8'];
  if (data instanceof Uint8Array) return ['u8'];
  return [];
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f32 → bf16 bits, round to nearest even (NaN stays NaN). */
export function f32ToBf16Bits(x: number): number {
  if (typeof x !== 'number') throw invalid('ERR_ARG', 'f32ToBf16Bits', 'a number', x);
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  if (typeof h !== 'number') throw invalid('ERR_ARG', 'bf16BitsToF32', 'a number', h);
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/** f32 → IEEE half bits, round to nearest even, overflow to ±Infinity. */
export function f32ToF16Bits(x: number): number {
  if (typeof x !== 'number') throw invalid('ERR_ARG', 'f32ToF16Bits', 'a number', x);
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half += 1;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half += 1; // may carry into the exponent: correct
  return sign | half;
}

export function f16BitsToF32(h: number): number {
  if (typeof h !== 'number') throw invalid('ERR_ARG', 'f16BitsToF32', 'a number', h);
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Converts f32 values (any array-like of numbers) to f16 or bf16 bits. */
export function toHalfBits(values: ArrayLike<number>, dtype: 'f16' | 'bf16'): Uint16Array {
  checkHalfArgs('toHalfBits', values, dtype);
  const out = new Uint16Array(values.length);
  const conv = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < values.length; i++) out[i] = conv(values[i]);
  return out;
}

function checkHalfArgs(op: string, values: unknown, dtype: unknown): void {
  const arrayLike = (typeof values === 'object' && values !== null && typeof (values as { length?: unknown }).length === 'number')
    || typeof values === 'string';
  if (!arrayLike || typeof values === 'string') throw invalid('ERR_ARG', `${op} values`, 'an array or TypedArray of numbers', values);
  const n = (values as { length: number }).length;
  if (!Number.isSafeInteger(n) || n < 0 || n > 2 ** 32 - 1) throw makeError('ERR_RANGE', `${op}: a length of ${n} is not a valid array length`);
  if (dtype !== 'f16' && dtype !== 'bf16') throw invalid('ERR_DTYPE', `${op} dtype`, "'f16' or 'bf16'", dtype);
}

/** Converts f16 or bf16 bits to f32 values. */
export function fromHalfBits(bits: ArrayLike<number>, dtype: 'f16' | 'bf16'): Float32Array {
  checkHalfArgs('fromHalfBits', bits, dtype);
  const out = new Float32Array(bits.length);
  const conv = dtype === 'f16' ? f16BitsToF32 : bf16BitsToF32;
  for (let i = 0; i < bits.length; i++) out[i] = conv(bits[i]);
  return out;
}
