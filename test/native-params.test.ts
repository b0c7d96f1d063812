// The addon reads every op's scalar parameters from fixed slots of one
// Float64Array (binding/params.h); lib/native.ts packs them by PARAM_NAMES.
// The two tables must name the same slots in the same order.
import { native, PARAM_NAMES } from '../lib/native';

describe('native params slots', () => {
  const fromAddon = native().paramNames();

  test('the addon and lib/native.ts declare the same ops', () => {
    expect(Object.keys(fromAddon).sort()).toEqual(Object.keys(PARAM_NAMES).sort());
  });

  test.each(Object.keys(PARAM_NAMES))('%s: the same slot names in the same order', (op) => {
    expect(fromAddon[op]).toEqual([...PARAM_NAMES[op as keyof typeof PARAM_NAMES]]);
  });

  test('wait is slot 0 of every op, and every op is an addon function', () => {
    const mod = native() as unknown as Record<string, unknown>;
    for (const [op, names] of Object.entries(PARAM_NAMES)) {
      expect([op, names[0]]).toEqual([op, 'wait']);
      expect([op, typeof mod[op]]).toEqual([op, 'function']);
    }
  });
});
