// Accessibility checks run in the page (tests/console/test_journeys.py):
// every form control has a label, and every visible text meets WCAG AA contrast (4.5:1).
function lum(rgb) {
  const c = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}
function parse(color) {
  const m = color.match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const p = m[1].split(",").map(x => parseFloat(x));
  return { rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 };
}
function background(el) {
  for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0) return c.rgb;
  }
  return [255, 255, 255];
}
const problems = [];
for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
  const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.getAttribute("aria-label");
  if (!labelled) problems.push("no label: " + el.outerHTML.slice(0, 80));
}
for (const el of document.querySelectorAll("body *")) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.offsetParent && getComputedStyle(el).position !== "fixed") continue;
  const style = getComputedStyle(el);
  if (style.visibility === "hidden" || el.closest(".skip")) continue;
  const fg = parse(style.color).rgb, bg = background(el);
  const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  const ratio = (hi + 0.05) / (lo + 0.05);
  if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)}: ${el.tagName} ${el.textContent.trim().slice(0, 30)}`);
}
return problems;
