// Signs in to the dashboard of a server that ran `custody demo`, walks from the
// logs to the send's chain of custody and on to the session tree, and checks
// what a reviewer must see there. Screenshots go to the directory given.
//
// node dashboard.mjs BASE_URL READ_KEY SCREENSHOT_DIR   (CHROMIUM names the browser binary)
import { chromium } from "playwright-core";

const [base, key, shots] = process.argv.slice(2);
if (!base || !key || !shots) {
  console.error("usage: node dashboard.mjs BASE_URL READ_KEY SCREENSHOT_DIR");
  process.exit(2);
}

function expect(condition, what) {
  if (!condition) {
    throw new Error(`expected ${what}`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  // Nothing is open without a key.
  await page.goto(`${base}/audit?workspace=acme`);
  expect((await page.title()).startsWith("Sign in"), "the sign-in page before signing in");
  await page.fill("input[name=key]", key);
  await Promise.all([page.waitForURL(`${base}/`), page.click("button:has-text('Sign in')")]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "custody_session");
  expect(session && session.httpOnly && session.sameSite === "Strict", "an HttpOnly, SameSite=Strict session cookie");
  await page.screenshot({ path: `${shots}/logs.png`, fullPage: true });

  await page.click("button:has-text('Verify now')");
  expect((await page.textContent("#verdict")).startsWith("intact"), "the log of acme to verify");
  await page.goBack();

  await page.click("a[href^='/audit?workspace=acme']");
  await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });
  await page.click("a:has-text('act-send-email')");
  expect((await page.title()).startsWith("Chain of custody of act-send-email"), "the send's chain of custody");
  const authorized = await page.textContent("#authorized");
  expect(authorized.includes("approved by user:bob"), `the approver, in: ${authorized}`);
  const models = await page.textContent("#models");
  expect(models.includes("gpt-4o"), `the model, in: ${models}`);
  const trace = await page.textContent("section:has(h2:text('Trace store'))");
  expect(trace.includes("crm-helper") && trace.includes("drafter"), "the helper agents beside the audit side");
  const audit = await page.textContent("section:has(h2:text('Audit log'))");
  expect(audit.includes("approval.granted") && audit.includes("authz.decision"), "the approval and the decision");
  await page.screenshot({ path: `${shots}/chain-of-custody.png`, fullPage: true });

  await page.click("a[href^='/sessions/']");
  const tree = await page.textContent("main");
  expect(tree.includes("support") && tree.includes("crm-helper") && tree.includes("drafter"), "the swarm's agents");
  expect(tree.includes("subtree"), "per-agent rollups");
  await page.screenshot({ path: `${shots}/session-tree.png`, fullPage: true });

  await page.click("a:text-is('model_call gpt-4o')");
  const call = await page.textContent("main");
  expect(call.includes("Prompt") && call.includes("Retrieved context") && call.includes("Output"), "a model call in full");
  await page.screenshot({ path: `${shots}/model-call.png`, fullPage: true });
  console.log("dashboard: every check passed");
} finally {
  await browser.close();
}
