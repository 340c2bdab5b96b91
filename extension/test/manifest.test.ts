// The extension manifest (package.json): what activate() registers is what the manifest
// declares, and the settings' defaults are the documented ones: the protocol's (DEFAULTS, read
// from its schemas) where a setting stands for a protocol value, since the manifest cannot import.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {DEVICE_MAP_PLANS, adapterSetting, deviceMapSetting} from '../host/settings';
import {DEFAULTS} from '../shared/protocol/types';
import {THRESHOLD_RANGE} from '../shared/webviewMessages';
import {ROOT} from './helpers';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const manifest: any = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const source = (file: string) => fs.readFileSync(path.join(ROOT, 'extension', 'host', file), 'utf8');

test('the manifest points at the bundled extension and accepts VS Code 1.91+', () => {
  assert.equal(manifest.main, './dist/extension.js');
  assert.equal(manifest.engines.vscode, '^1.91.0');
  assert.equal(manifest.devDependencies['@types/vscode'], '1.91.0', '@types/vscode must match the engines minimum (vsce)');
  assert.equal(manifest.dependencies['vscode-languageclient'], '11.0.0');
  assert.deepEqual(manifest.capabilities.untrustedWorkspaces.supported, 'limited');
});

test('every registered command is declared, and every declared command is registered', () => {
  const registered = [...source('extension.ts').matchAll(/register\('(lmscope\.\w+)'/g)].map((m) => m[1]).sort();
  const declared = manifest.contributes.commands.map((c: {command: string}) => c.command).sort();
  assert.deepEqual(registered, declared);
  for (const id of ['lmscope.traceSelection', 'lmscope.tracePrompt', 'lmscope.openTrace', 'lmscope.selectModel', 'lmscope.restartDaemon', 'lmscope.showLog']) {
    assert.ok(declared.includes(id), id);
  }
});

test('Trace Selection has a keybinding and an editor context menu entry', () => {
  const key = manifest.contributes.keybindings.find((k: {command: string}) => k.command === 'lmscope.traceSelection');
  assert.equal(key.key, 'ctrl+alt+t');
  assert.equal(key.mac, 'cmd+alt+t');
  assert.ok(manifest.contributes.menus['editor/context'].some((m: {command: string}) => m.command === 'lmscope.traceSelection'));
});

test('settings have the documented defaults and every one read by the code is declared', () => {
  const props = manifest.contributes.configuration.properties;
  assert.equal(props['lmscope.model'].default, 'default');
  assert.equal(props['lmscope.device'].default, DEFAULTS.DeviceRequest);
  assert.equal(props['lmscope.threshold'].default, DEFAULTS.Threshold);
  assert.equal(props['lmscope.renormalize'].default, DEFAULTS.ThresholdMode === 'renormalize');
  assert.equal(props['lmscope.tracesFolder'].default, 'traces');
  assert.ok('lmscope.python' in props && 'lmscope.dtype' in props);
  const read = new Set<string>();
  for (const file of fs.readdirSync(path.join(ROOT, 'extension', 'host')).filter((f) => f.endsWith('.ts'))) {
    for (const m of source(file).matchAll(/\.get<\w+>\('(\w+)'/g)) read.add(`lmscope.${m[1]}`);
  }
  for (const key of ['lmscope.python', 'lmscope.model', 'lmscope.device', 'lmscope.threshold', 'lmscope.tracesFolder']) assert.ok(read.has(key), `${key} is read`);
  for (const key of read) assert.ok(key in props, `${key} is read but not declared`);
});

test('the threshold setting opens no lower than a default trace answers, within the graph\'s range', () => {
  const threshold = manifest.contributes.configuration.properties['lmscope.threshold'];
  assert.ok(threshold.minimum >= DEFAULTS.MinThreshold, `minimum ${threshold.minimum} < MinThreshold ${DEFAULTS.MinThreshold}`);
  assert.ok(threshold.minimum <= threshold.default && threshold.default <= threshold.maximum);
  assert.ok(threshold.maximum <= THRESHOLD_RANGE.max);
});

test('the device-map setting offers exactly the protocol\'s plans, and "" for one device', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'protocol', 'schemas', 'loadModel.params.schema.json'), 'utf8'));
  assert.deepEqual([...DEVICE_MAP_PLANS], schema.properties.deviceMap.enum);
  const setting = manifest.contributes.configuration.properties['lmscope.deviceMap'];
  assert.equal(setting.default, '');
  assert.deepEqual(setting.enum, ['', ...DEVICE_MAP_PLANS]);
  assert.equal(deviceMapSetting('auto'), 'auto');
  assert.equal(deviceMapSetting(' sequential '), 'sequential');
  assert.equal(deviceMapSetting(''), undefined);
  assert.equal(deviceMapSetting('everywhere'), undefined);
});

test('the adapter setting is a folder sent as loadModel\'s and initialize\'s adapter, "" for none', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'protocol', 'schemas', 'loadModel.params.schema.json'), 'utf8'));
  const init = JSON.parse(fs.readFileSync(path.join(ROOT, 'protocol', 'schemas', 'initializationOptions.schema.json'), 'utf8'));
  assert.equal(schema.properties.adapter.type, 'string');
  assert.equal(init.properties.adapter.type, 'string');
  const setting = manifest.contributes.configuration.properties['lmscope.adapter'];
  assert.equal(setting.type, 'string');
  assert.equal(setting.default, '');
  assert.equal(adapterSetting(' ~/loras/poems '), '~/loras/poems');
  assert.equal(adapterSetting('  '), undefined);
  assert.equal(adapterSetting(undefined), undefined);
  assert.match(source('commands.ts'), /params\.adapter = adapter/);
  assert.match(source('daemon.ts'), /initializationOptions\.adapter = adapter/);
});

test('.lmtrace files open in the read-only custom editor', () => {
  const editor = manifest.contributes.customEditors.find((e: {viewType: string}) => e.viewType === 'lmscope.traceViewer');
  assert.deepEqual(editor.selector, [{filenamePattern: '*.lmtrace'}]);
  assert.equal(editor.priority, 'default');
  assert.match(source('traceEditor.ts'), /CustomReadonlyEditorProvider/);
});

test('the .vscodeignore is an allow-list', () => {
  const lines = fs.readFileSync(path.join(ROOT, '.vscodeignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  assert.equal(lines[0], '**');
  assert.ok(lines.includes('!dist/extension.js') && lines.includes('!dist/webview.js'));
  assert.ok(lines.includes('!package.json'));
});

test('Open Run… is offered on a run.json (Explorer and editor title), its bundle ships, and it opens traces in the trace editor', () => {
  for (const menu of ['explorer/context', 'editor/title']) {
    const entry = manifest.contributes.menus[menu].find((m: {command: string}) => m.command === 'lmscope.openRun');
    assert.equal(entry?.when, 'resourceFilename == run.json', menu);
  }
  assert.match(manifest.scripts['build:webview'], /\bwebview=extension\/webview\/main\.ts runView=extension\/webview\/runView\.ts\b/);
  const shipped = fs.readFileSync(path.join(ROOT, '.vscodeignore'), 'utf8').split('\n').map((l) => l.trim());
  assert.ok(shipped.includes('!dist/runView.js') && shipped.includes('!dist/runView.css'));
  assert.match(source('runView.ts'), /joinPath\(dist, 'runView\.js'\)/);
  assert.match(source('runView.ts'), /executeCommand\('vscode\.openWith', trace, TRACE_VIEW_TYPE/);
  assert.equal(manifest.contributes.configuration.properties['lmscope.run'].default, '');
});
