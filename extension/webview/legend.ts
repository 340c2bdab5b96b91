/**
 * The legend under the toolbar: what each node shape and colour, each edge colour, a node's
 * size and an edge's width mean, in the vocabulary every view shares (protocol/vocabulary.json:
 * `R22.2`, `A23.14`, `M29.14`, `X3` and their colours are the hover cards', the CLI's and the SVG
 * export's too). A `<details>` element, so a user who knows it folds it to one line (kept with
 * the page's state). Also sets the page's colour variables from the vocabulary.
 */

import {cssColour, edgeColour, nodeColour} from '../shared/display';
import {EDGE_VOCABULARY, NODE_SIZES, NODE_VOCABULARY, OUTPUT_NODE} from '../shared/protocol/vocabulary';
import type {EdgeKind, NodeKind} from '../shared/protocol/types';
import {el, svg} from './dom';

/** Legend order: the stream from the top of the graph down, then the edges. */
const NODE_KINDS: readonly NodeKind[] = ['residual', 'post_attention', 'ffn', 'embedding'];
const EDGE_KINDS: readonly EdgeKind[] = ['attention', 'ffn', 'residual'];

/** The CSS variables style.css draws with, each the theme's colour with the vocabulary's hex. */
export function applyVocabularyColours(root: HTMLElement = document.documentElement): void {
  for (const kind of EDGE_KINDS) root.style.setProperty(`--edge-${kind}`, cssColour(edgeColour(kind)));
  for (const kind of NODE_KINDS) root.style.setProperty(`--node-${kind}`, cssColour(nodeColour(kind)));
  root.style.setProperty('--output', cssColour(OUTPUT_NODE.colour));
  root.style.setProperty('--negative', cssColour('negative'));
  root.style.setProperty('--positive', cssColour('positive'));
}

function nodeSwatch(kind: NodeKind): SVGSVGElement {
  const box = svg('svg', {width: 14, height: 12, class: 'swatch', 'aria-hidden': 'true'});
  if (NODE_VOCABULARY[kind].shape === 'square') box.append(svg('rect', {x: 2.5, y: 1.5, width: 9, height: 9, class: `key-node ${kind}`}));
  else box.append(svg('circle', {cx: 7, cy: 6, r: 4.5, class: `key-node ${kind}`}));
  return box;
}

function edgeSwatch(kind: EdgeKind): SVGSVGElement {
  const box = svg('svg', {width: 16, height: 12, class: 'swatch', 'aria-hidden': 'true'});
  const line = svg('line', {x1: 1, y1: 6, x2: 15, y2: 6, class: `key-edge ${kind}`, 'stroke-width': 2.5});
  const dash = EDGE_VOCABULARY[kind].dash;
  if (dash !== null) line.setAttribute('stroke-dasharray', dash);
  box.append(line);
  return box;
}

function outputSwatch(): SVGSVGElement {
  const box = svg('svg', {width: 14, height: 12, class: 'swatch', 'aria-hidden': 'true'});
  box.append(svg('circle', {cx: 7, cy: 6, r: 4.5, class: 'key-node residual output'}));
  return box;
}

export function legend(): HTMLDetailsElement {
  const details = el('details', {class: 'legend', open: ''});
  details.append(el('summary', {}, 'Legend'));
  const items = el('div', {class: 'legend-items'});
  const item = (swatch: SVGSVGElement, text: string, title: string) => {
    const entry = el('span', {class: 'legend-item', title});
    entry.append(swatch, document.createTextNode(text));
    items.append(entry);
  };
  for (const kind of NODE_KINDS) {
    const node = NODE_VOCABULARY[kind];
    item(nodeSwatch(kind), `${node.letter} ${node.name}`, node.legend);
  }
  item(outputSwatch(), OUTPUT_NODE.name, OUTPUT_NODE.legend);
  for (const kind of EDGE_KINDS) item(edgeSwatch(kind), EDGE_VOCABULARY[kind].name, EDGE_VOCABULARY[kind].legend);
  items.append(el('span', {class: 'legend-item legend-note'}, NODE_SIZES.legend));
  details.append(items);
  return details;
}
