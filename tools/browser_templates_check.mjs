// Load every template of the pack in ComfyUI's real editor (headless Chromium) and export it to API format.
// Usage: NODE_PATH=<folder with node_modules/playwright-core> node tools/browser_templates_check.mjs URL PACK [CHROMIUM]
// Prints one JSON object: {templates: {name: {nodes, output, errors}}, console_errors: [...]}. Dev/test tool only.
import { createRequire } from "module";
const require = createRequire(process.env.NODE_PATH ? process.env.NODE_PATH + "/" : import.meta.url);
const { chromium } = require("playwright-core");

const [url, pack, exe = "/usr/bin/chromium"] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", "--disable-gpu", "--headless=new"] });
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 120000 });
await page.waitForTimeout(2000);
const result = await page.evaluate(async (pack) => {
  const out = {};
  const list = await (await fetch("/workflow_templates")).json();
  for (const name of list[pack] || []) {
    const ui = await (await fetch(`/api/workflow_templates/${pack}/${name}.json`)).json();
    const errors = [];
    try {
      await window.app.loadGraphData(ui, true, true, name);
      const p = await window.app.graphToPrompt();
      out[name] = { nodes: window.app.graph.nodes.length, output: p.output, errors,
                    missing: window.app.graph.nodes.filter((n) => n.has_errors || n.type === undefined).map((n) => n.id) };
    } catch (e) {
      out[name] = { errors: [String(e && e.stack || e)] };
    }
  }
  return out;
}, pack);
console.log(JSON.stringify({ templates: result, console_errors: consoleErrors }));
await browser.close();
