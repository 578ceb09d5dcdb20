// Load every template of the pack in ComfyUI's real editor (headless Chromium) and export it to API format.
// Usage: NODE_PATH=<folder with node_modules/playwright-core> node tools/browser_templates_check.mjs URL PACK [CHROMIUM]
//        [SCREENSHOT_DIR]
// Prints one JSON object: {templates: {name: {nodes, output, errors, missing, boxes}}, cards: [...],
// console_errors: [...]}. `boxes` are the nodes' on-canvas rectangles as the editor draws them (title bar included:
// [x, y, w, h]), after the editor sized the nodes itself. With SCREENSHOT_DIR it also writes <name>.png (the whole
// graph fitted to the window) and templates_dialog.png (the pack's cards in the template browser). Dev/test tool only.
import { createRequire } from "module";
const require = createRequire(process.env.NODE_PATH ? process.env.NODE_PATH + "/" : import.meta.url);
const { chromium } = require("playwright-core");

const [url, pack, exe = "/usr/bin/chromium", shots = ""] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", "--disable-gpu", "--headless=new"] });
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
// A fresh user folder shows a first-run template dialog; mark the tutorial as done so it stays closed.
await fetch(url + "/settings/Comfy.TutorialCompleted", { method: "POST", body: "true" }).catch(() => {});
await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 120000 });
await page.waitForTimeout(2000);
await page.keyboard.press("Escape");

const names = await page.evaluate(async (pack) => (await (await fetch("/workflow_templates")).json())[pack] || [], pack);
const result = {};
for (const name of names) {
  result[name] = await page.evaluate(async ([pack, name]) => {
    const errors = [];
    try {
      const ui = await (await fetch(`/api/workflow_templates/${pack}/${name}.json`)).json();
      await window.app.loadGraphData(ui, true, true, name);
      await new Promise((r) => setTimeout(r, 500));
      const p = await window.app.graphToPrompt();
      const th = window.LiteGraph.NODE_TITLE_HEIGHT;
      const nodes = window.app.graph.nodes;
      const boxes = {};
      for (const n of nodes) boxes[n.id] = [n.pos[0], n.pos[1] - th, n.size[0], n.size[1] + th];
      const xs = Object.values(boxes), pad = 40;
      const bbox = [Math.min(...xs.map((b) => b[0])) - pad, Math.min(...xs.map((b) => b[1])) - pad,
                    Math.max(...xs.map((b) => b[0] + b[2])) + pad, Math.max(...xs.map((b) => b[1] + b[3])) + pad];
      return { nodes: nodes.length, output: p.output, errors, boxes, bbox,
               missing: nodes.filter((n) => n.has_errors || n.type === undefined).map((n) => n.id) };
    } catch (e) {
      return { errors: [String(e && e.stack || e)] };
    }
  }, [pack, name]);
  if (shots && result[name].bbox) {
    // A window large enough to show the whole graph at 75 % zoom (below about 60 % the editor stops drawing
    // widget text), then fit the graph into it.
    const [x0, y0, x1, y1] = result[name].bbox, zoom = 0.75;
    await page.setViewportSize({ width: Math.min(4000, Math.max(1600, Math.ceil((x1 - x0) * zoom) + 160)),
                                 height: Math.min(3000, Math.max(1000, Math.ceil((y1 - y0) * zoom) + 200)) });
    await page.waitForTimeout(800);
    await page.evaluate(([x0, y0, x1, y1]) => {
      const c = window.app.canvas, el = c.canvas;
      const scale = Math.min(el.clientWidth / (x1 - x0), el.clientHeight / (y1 - y0), 1.0);
      c.ds.scale = scale;
      c.ds.offset[0] = -x0 + (el.clientWidth / scale - (x1 - x0)) / 2;
      c.ds.offset[1] = -y0 + (el.clientHeight / scale - (y1 - y0)) / 2;
      c.setDirty(true, true);
    }, result[name].bbox);
    await page.waitForTimeout(800);
    await page.screenshot({ path: `${shots}/${name}.png` });
    await page.setViewportSize({ width: 1600, height: 1000 });
  }
}

// The template browser: the pack's cards (title and description as the user reads them).
let cards = [];
try {
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  await page.waitForTimeout(2500);
  const section = page.getByText(pack, { exact: true }).first();
  if (await section.count()) { await section.click(); await page.waitForTimeout(2000); }
  cards = await page.evaluate(() => Array.from(document.querySelectorAll("[data-testid^='template-workflow-'], .template-card, [class*='card']"))
    .map((e) => e.innerText.trim()).filter((t) => t).slice(0, 40));
  if (shots) await page.screenshot({ path: `${shots}/templates_dialog.png` });
} catch (e) {
  consoleErrors.push("template browser: " + String(e));
}
console.log(JSON.stringify({ templates: result, cards, console_errors: consoleErrors }));
await browser.close();
