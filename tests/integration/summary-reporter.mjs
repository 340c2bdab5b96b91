// A node:test reporter that ends the run with one plain line: "N passed, N failed" (what CI
// looks for), plus todo/skipped counts when there are any. Use next to the spec reporter:
//   node --test --test-reporter=spec --test-reporter-destination=stdout \
//     --test-reporter=./tests/integration/summary-reporter.mjs --test-reporter-destination=stdout ...
export default async function* summary(source) {
  let passed = 0;
  let failed = 0;
  let todo = 0;
  let skipped = 0;
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    if (event.data.nesting !== 0 || event.data.details?.type === "suite") continue;
    if (event.data.todo !== undefined && event.data.todo !== false) todo++;
    else if (event.data.skip !== undefined && event.data.skip !== false) skipped++;
    else if (event.type === "test:pass") passed++;
    else failed++;
  }
  const extra = todo || skipped ? ` (${todo} todo, ${skipped} skipped)` : "";
  yield `${passed} passed, ${failed} failed${extra}\n`;
}
