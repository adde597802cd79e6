// Drives dpgate's browser console in a real headless Chromium (Debian's
// package) through Playwright: log in, see the tables, run a grouped
// query, see rows and error bars, see the budget go down, see a refusal's
// message and hint. Prints one line per step; exits non-zero on failure.
//
//   DPGATE_CONSOLE_URL=http://127.0.0.1:8080/ DPGATE_USER=analyst \
//   DPGATE_PASSWORD=... CHROMIUM=/usr/bin/chromium node console.js
"use strict";

const { chromium } = require("playwright-core");

const url = process.env.DPGATE_CONSOLE_URL;
const user = process.env.DPGATE_USER || "analyst";
const password = process.env.DPGATE_PASSWORD;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(condition, what) {
  if (!condition) throw new Error("failed: " + what);
  console.log("ok: " + what);
}

(async () => {
  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // Refused requests (401, 400) are logged by the browser as failed
    // loads; those are expected. Anything else is a script error.
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
    });
    await page.goto(url);

    // A wrong password is refused on the page, without a browser dialog.
    await page.fill("#login-user", user);
    await page.fill("#login-password", "wrong");
    await page.click("#login-button");
    await page.waitForSelector("#login-error:not([hidden])");
    check((await page.textContent("#login-error")).includes("not accepted"), "a wrong password is refused with a message");

    await page.fill("#login-password", password);
    await page.click("#login-button");
    await page.waitForSelector("#app:not([hidden])");
    await page.waitForFunction(() => document.querySelectorAll("#tables li").length > 0);
    const tables = await page.textContent("#tables");
    check(tables.includes("visits") && tables.includes("ward"), "the declared tables and columns are listed");
    await page.waitForFunction(() => document.getElementById("budget").dataset.remaining !== undefined);
    const before = Number(await page.getAttribute("#budget", "data-remaining"));
    check(before > 0, "the budget gauge shows " + before + " left");

    await page.fill("#sql", "SELECT ward, COUNT(*) AS visits FROM visits GROUP BY ward ORDER BY ward");
    await page.click("#run");
    await page.waitForSelector("#result tr:nth-child(4)");
    const rows = await page.$$eval("#result tr", (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent)));
    check(rows[0].join(",") === "ward,visits" && rows.length === 4 && rows[1][0] === "A", "a grouped answer shows as a table: " + JSON.stringify(rows));
    const bars = await page.$$eval("#chart rect.bar", (r) => r.length);
    const errorbars = await page.$$eval("#chart line.errorbar", (l) => l.length);
    check(bars === 3 && errorbars === 9, "a bar chart with an error bar per group (" + bars + " bars, " + errorbars + " error-bar lines)");
    check((await page.textContent("#meta")).includes("cost ε = 0.1"), "the answer says what it cost");
    await page.waitForFunction((b) => Number(document.getElementById("budget").dataset.remaining) < b, before);
    const after = Number(await page.getAttribute("#budget", "data-remaining"));
    check(Math.abs(before - after - 0.1) < 1e-9, "the budget went down by 0.1 to " + after);
    const width = Number(await page.getAttribute("#budget-bar", "width"));
    check(width < 200, "the gauge shrank to " + width + " of 200");
    await page.waitForFunction(() => document.querySelectorAll("#history li").length > 0);
    check((await page.textContent("#history")).includes("GROUP BY ward"), "the query is in the history");

    await page.fill("#sql", "SELECT * FROM visits");
    await page.click("#run");
    await page.waitForSelector("#error:not([hidden])");
    const message = await page.textContent("#error .message");
    const hint = await page.textContent("#error .hint");
    check(message.length > 0 && hint.startsWith("Hint: "), "a refusal shows its message and hint: " + message + " / " + hint);
    check((await page.textContent("#error .code")) === "42501", "with its SQLSTATE");
    check(errors.length === 0, "no script errors (" + errors.join("; ") + ")");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e.message || e);
  process.exit(1);
});
