import { describe, expect, it } from 'vitest';
import { copyInto, giveStage, takeStage } from '../../oci/stages.js';

describe('copyInto (stage memory)', () => {
  it('copies exactly the source to the start of a stage, leaving the rest as it was, an empty source included', () => {
    const stage = takeStage()!;
    try {
      stage.fill(0xaa, 0, 64);
      copyInto(stage, Uint8Array.of(1, 2, 3, 4, 5));
      expect([...stage.subarray(0, 8)]).toEqual([1, 2, 3, 4, 5, 0xaa, 0xaa, 0xaa]);
      copyInto(stage.subarray(3), new Uint8Array(0));
      expect([...stage.subarray(0, 8)]).toEqual([1, 2, 3, 4, 5, 0xaa, 0xaa, 0xaa]);
      const big = Buffer.alloc(3 << 20, 7);
      stage[999] = 9;
      stage[1000 + big.length] = 9;
      copyInto(stage.subarray(1000), big);
      expect(stage.subarray(1000, 1000 + big.length).equals(big)).toBe(true);
      expect([stage[999], stage[1000 + big.length]]).toEqual([9, 9]);
    } finally {
      giveStage(stage);
    }
  });
});
