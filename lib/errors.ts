/**
 * Errors. Every error tokensieve throws carries a stable `code`:
 *
 * | code              | class            | meaning                                              |
 * |-------------------|------------------|------------------------------------------------------|
 * | `ERR_ARG`         | TypeError        | an argument or option of the wrong JS type or value  |
 * | `ERR_DTYPE`       | TypeError        | unsupported or mismatched element type               |
 * | `ERR_SHAPE`       | RangeError       | wrong rank, mismatched dimensions                    |
 * | `ERR_RANGE`       | RangeError       | k, index or range out of bounds; NaN/Inf input; short or detached buffer |
 * | `ERR_DEVICE`      | TokenSieveError  | tensors on different devices, CUDA unavailable       |
 * | `ERR_DISPOSED`    | TokenSieveError  | a disposed tensor was used                           |
 * | `ERR_CUDA`        | TokenSieveError  | a CUDA call failed (the message names the CUDA error) |
 * | `ERR_UNSUPPORTED` | TokenSieveError  | a valid request this build or kernel cannot serve    |
 * | `ERR_LOAD`        | TokenSieveError  | no native binary could be loaded                     |
 * | `ERR_INTERNAL`    | TokenSieveError  | a bug: please report it                              |
 */
export type ErrorCode =
  | 'ERR_ARG'
  | 'ERR_DTYPE'
  | 'ERR_SHAPE'
  | 'ERR_RANGE'
  | 'ERR_DEVICE'
  | 'ERR_DISPOSED'
  | 'ERR_CUDA'
  | 'ERR_UNSUPPORTED'
  | 'ERR_LOAD'
  | 'ERR_INTERNAL';

/** Errors that are not about the type or range of an argument. */
export class TokenSieveError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'TokenSieveError';
    this.code = code;
  }
}

export interface CodedTypeError extends TypeError {
  code: ErrorCode;
}
export interface CodedRangeError extends RangeError {
  code: ErrorCode;
}
export type TokenSieveAnyError = TokenSieveError | CodedTypeError | CodedRangeError;

/** The error class each code maps to. */
export function makeError(code: ErrorCode, message: string): TokenSieveAnyError {
  let e: TokenSieveAnyError;
  switch (code) {
    case 'ERR_ARG':
    case 'ERR_DTYPE':
      e = new TypeError(message) as CodedTypeError;
      break;
    case 'ERR_SHAPE':
    case 'ERR_RANGE':
      e = new RangeError(message) as CodedRangeError;
      break;
    default:
      return new TokenSieveError(code, message);
  }
  Object.defineProperty(e, 'code', { value: code, enumerable: true, writable: false });
  return e;
}

/** Formats a value for "but received ..." in messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return v.length <= 8 ? `[${v.map(describe).join(', ')}]` : `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of length ${(v as unknown as { length?: number }).length ?? v.byteLength}`;
  const name = (v as object).constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}

/** `Expected <what> for <arg> but received <got>` as the right error class. */
export function invalid(code: ErrorCode, arg: string, expected: string, got: unknown): TokenSieveAnyError {
  return makeError(code, `Expected ${expected} for ${arg} but received ${describe(got)}`);
}

const KNOWN_CODES = new Set<string>([
  'ERR_ARG', 'ERR_DTYPE', 'ERR_SHAPE', 'ERR_RANGE', 'ERR_DEVICE', 'ERR_DISPOSED',
  'ERR_CUDA', 'ERR_UNSUPPORTED', 'ERR_LOAD', 'ERR_INTERNAL',
]);

/**
 * Turns an error from the addon ({ message, code }) into the public error
 * class, with the stack of the JS call site (`site`) rather than the native
 * frame, so async rejections point at the caller's code.
 */
export function fromNative(e: unknown, op: string, site?: { stack?: string }): Error {
  const raw = e as { code?: string; message?: string };
  if (!raw || typeof raw.code !== 'string' || !KNOWN_CODES.has(raw.code)) return e as Error;
  const err = makeError(raw.code as ErrorCode, `${op}: ${raw.message ?? 'failed'}`);
  if (site?.stack) {
    const frames = site.stack.split('\n').slice(1).join('\n');
    err.stack = `${err.name} [${raw.code}]: ${err.message}\n${frames}`;
  }
  return err;
}
