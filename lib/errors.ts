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

/**
 * Every coded error carries this brand (on its prototype), so
 * `e instanceof TokenSieveError` holds for all of them, whichever built-in
 * class (TypeError, RangeError) they also are, and across copies of the package.
 */
const BRAND = Symbol.for('tokensieve.error');

/**
 * The class of every error tokensieve throws with a `code`. Errors about an
 * argument's type or range are also `TypeError` / `RangeError` (see the table
 * above); `e instanceof TokenSieveError` (or {@link isTokenSieveError}) is
 * true for all of them, including those raised by the native kernels.
 */
export class TokenSieveError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'TokenSieveError';
    this.code = code;
  }
  /** True for every coded tokensieve error (TypeError and RangeError ones included). */
  static override [Symbol.hasInstance](v: unknown): boolean {
    // A subclass (class MyError extends TokenSieveError) keeps the ordinary test.
    if (this !== TokenSieveError) return Function.prototype[Symbol.hasInstance].call(this, v);
    return typeof v === 'object' && v !== null && (v as { [BRAND]?: unknown })[BRAND] === true;
  }
}

/** An `ERR_ARG` / `ERR_DTYPE` error: a `TypeError` that is also `instanceof TokenSieveError`. */
export class TokenSieveTypeError extends TypeError {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'TypeError';
    this.code = code;
  }
}

/** An `ERR_SHAPE` / `ERR_RANGE` error: a `RangeError` that is also `instanceof TokenSieveError`. */
export class TokenSieveRangeError extends RangeError {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'RangeError';
    this.code = code;
  }
}

for (const cls of [TokenSieveError, TokenSieveTypeError, TokenSieveRangeError]) {
  Object.defineProperty(cls.prototype, BRAND, { value: true });
}

export type CodedTypeError = TokenSieveTypeError;
export type CodedRangeError = TokenSieveRangeError;
export type TokenSieveAnyError = TokenSieveError | TokenSieveTypeError | TokenSieveRangeError;

/**
 * Whether `e` is an error tokensieve threw with a stable `code` (the same
 * test as `e instanceof TokenSieveError`), narrowing it for TypeScript.
 * @example
 * try { fasterVLMSync(src, { keep }); } catch (e) { if (isTokenSieveError(e) && e.code === 'ERR_RANGE') ... }
 */
export function isTokenSieveError(e: unknown): e is TokenSieveAnyError {
  return e instanceof TokenSieveError;
}

/** The error class each code maps to. */
export function makeError(code: ErrorCode, message: string): TokenSieveAnyError {
  switch (code) {
    case 'ERR_ARG':
    case 'ERR_DTYPE':
      return new TokenSieveTypeError(code, message);
    case 'ERR_SHAPE':
    case 'ERR_RANGE':
      return new TokenSieveRangeError(code, message);
    default:
      return new TokenSieveError(code, message);
  }
}

/**
 * The message of `e` as the public function `caller` reports it: prefixed
 * with `caller: ` (an internal step's name replaced by the caller's), the
 * stack's first line updated. For errors raised inside a method by a kernel
 * it runs. Errors without a tokensieve code are returned untouched.
 */
export function renamed(e: unknown, caller: string): unknown {
  if (!isTokenSieveError(e)) return e;
  const old = e.message;
  if (old.startsWith(`${caller}: `) || old.startsWith(`${caller} `)) return e;
  let msg = old.replace(new RegExp(`(?: for| of) ${caller.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?= but|[,.:;)]|$)`), '');
  msg = `${caller}: ${msg}`;
  // Read the stack before changing the message: V8 formats it lazily, on
  // first access, from the message at that time, so reading it afterwards
  // would hold the new message already and the replace would prefix twice.
  const stack = e.stack;
  e.message = msg;
  if (typeof stack === 'string' && stack.includes(old)) e.stack = stack.replace(old, () => msg);
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

/**
 * The public function the user called, while it runs steps of its own (a
 * method running kernels, Tensor.to allocating): kernels run inside
 * {@link asCaller} name it in their errors instead of their own name.
 * Only the synchronous part of a call sees it (each op captures it when it
 * starts), so concurrent async calls never see each other's name.
 */
let currentCaller: string | undefined;

/** The name errors of an op called as `op` should carry: the outermost public caller's. */
export function callerName(op: string): string {
  return currentCaller ?? op;
}

/**
 * Runs `fn` (synchronously) as part of the public function `caller`: the ops
 * it starts name `caller` in their errors, and an error it throws is
 * reported as `caller: ...`. The outermost caller wins.
 */
export function asCaller<T>(caller: string, fn: () => T): T {
  const outer = currentCaller;
  if (outer !== undefined) return fn();
  currentCaller = caller;
  try {
    return fn();
  } catch (e) {
    throw renamed(e, caller);
  } finally {
    currentCaller = outer;
  }
}
