// A synthetic mixture-of-experts trace for the tests (no Python needed): helpers.ts's synthetic
// trace (L=2, n=3, dFfn=4, stored neurons 3 and 1 at FFN node M0.2) with an experts table.
//
// Layout: both layers sparse, E=2 routed experts of 1 neuron, k=1 chosen per token, S=1 shared
// expert of 2 neurons: flat ids 0 = E0.N0, 1 = E1.N0, 2 = S0.N0, 3 = S0.N1 (width 4 = dFfn).
// M0.2 chose E1; its shared expert S0 contributes most.
import {syntheticWire} from './helpers';

type Wire = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const MOE_LAYOUT = {nExperts: 2, topK: 1, dExpert: 1, nShared: 1, dShared: 2, dDense: 0, sparseLayers: [0, 1]};

/** The experts table's value (plain lists, as Python writes it). */
export function moeExperts(): Wire {
  return {
    layout: {...MOE_LAYOUT, sparseLayers: [...MOE_LAYOUT.sparseLayers]},
    nodes: {layer: [0], position: [2], expert: [[2, 1]], gate: [[0.75, 0.625]], contribution: [[0.5, 0.25]], rest: [0.25]},
  };
}

/** The synthetic trace of a mixture-of-experts model. */
export function syntheticMoeWire(): Wire {
  const wire = syntheticWire();
  wire['model'] = {...wire['model'], family: 'mixtral', modelType: 'mixtral'};
  wire['extra'] = {'lmscope.experts': moeExperts()};
  return wire;
}
