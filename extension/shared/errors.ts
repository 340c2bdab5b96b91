/**
 * The errors of the trace library, one class per JSON-RPC error the daemon answers with, so the
 * editor shows the same message and can treat a saved trace and the daemon alike. Messages are
 * one line and copy the Python package's word for word (tests compare them with Python's).
 * Python twin: `lmscope.errors`.
 */

import {ErrorCodes} from './protocol/types';

/** Base of every user-facing error; `code` is the JSON-RPC code the daemon would answer with. */
export class LmscopeError extends Error {
  readonly code: number = ErrorCodes.LmscopeError;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A `.lmtrace` file that cannot be read: empty, truncated, corrupt, invalid or too new. */
export class TraceFileError extends LmscopeError {
  override readonly code: number = ErrorCodes.TraceFileError;
}

/** A threshold the trace cannot answer (below its minThreshold, or not a number). */
export class ThresholdError extends LmscopeError {}

/** A question a saved trace cannot answer without the model (unstored edges, neurons, ...). */
export class NeedsModelError extends LmscopeError {
  override readonly code: number = ErrorCodes.NeedsModel;
}

/** `x` as Python's `repr(float)` writes it (0.01, 1.0, 1e-05), so messages match the daemon's. */
export function pyFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const abs = Math.abs(x);
  if (abs >= 1e-4 && abs < 1e16) {
    // JS prints this range in fixed notation with the same shortest round-trip digits.
    return Number.isInteger(x) ? `${x}.0` : String(x);
  }
  const [mantissa, exponent = '0'] = x.toExponential().split('e');
  const sign = exponent.startsWith('-') ? '-' : '+';
  return `${mantissa}e${sign}${exponent.replace(/^[-+]/, '').padStart(2, '0')}`;
}
