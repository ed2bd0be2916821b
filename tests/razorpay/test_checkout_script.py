"""static/js/razorpay-checkout.js run by node against the real page's data-attributes.

A small stand-in DOM and a stand-in `Razorpay` constructor record what the
script does: the options it opens Checkout with, and the form it posts after
Checkout's success handler fires. Skipped where node is not installed.
"""
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "static" / "js" / "razorpay-checkout.js"
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const data = JSON.parse(process.argv[1]);
const fields = {};
["order_id", "razorpay_order_id", "razorpay_subscription_id", "razorpay_payment_id",
 "razorpay_signature", "csrf_token"].forEach(n => fields[n] = {value: data.form[n] || ""});
const record = {opened: 0, submitted: null, options: null, messages: []};
const form = {elements: fields, submit() { record.submitted = Object.fromEntries(
  Object.entries(fields).map(([k, v]) => [k, v.value])); }};
const message = {hidden: true, set textContent(t) { record.messages.push(t); }};
const button = {hidden: true, addEventListener() {}};
const root = {dataset: data.dataset};
const elements = {"razorpay-checkout": root, "razorpay-verify-form": form,
                  "razorpay-message": message, "razorpay-pay": button};
function Razorpay(options) { record.options = options; this.on = () => {};
                             this.open = () => { record.opened += 1; }; }
const context = {document: {readyState: "complete", getElementById: id => elements[id] || null,
                            addEventListener() {}}, window: {Razorpay}};
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), context);
record.options.handler(data.response);
record.buttonShown = !button.hidden;
process.stdout.write(JSON.stringify(record));
"""


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part.capitalize() for part in rest)


def _run(page_html: str, response: dict) -> dict:
    section = re.search(r'<section[^>]*id="razorpay-checkout"[^>]*>', page_html).group(0)
    dataset = {_camel(k): html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"',
                                                                   section)}
    form = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', page_html))
    out = subprocess.run(["node", "-e", HARNESS, json.dumps({"dataset": dataset, "form": form,
                                                             "response": response}), str(SCRIPT)],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def test_script_opens_checkout_for_the_order_and_posts_the_signed_result(shop, razorpay_fake):
    page = shop.checkout_page("meal-pack-5")
    order_id = re.search(r'data-order-id="([^"]+)"', page.text).group(1)

    record = _run(page.text, {"razorpay_order_id": order_id, "razorpay_payment_id": "pay_X1",
                              "razorpay_signature": "ab" * 32})

    options = record["options"]
    assert record["opened"] == 1 and record["buttonShown"]
    assert options["key"] == "rzp_test_TiffinKey0001" and options["order_id"] == order_id
    assert options["amount"] == "79900" and options["currency"] == "INR"
    assert "subscription_id" not in options
    assert options["prefill"] == {"name": "Asha", "email": "asha@example.com"}
    sent = record["submitted"]
    assert sent["order_id"] == order_id and sent["razorpay_payment_id"] == "pay_X1"
    assert sent["razorpay_signature"] == "ab" * 32 and sent["razorpay_order_id"] == order_id
    assert sent["csrf_token"]  # the page's token travels with the post


def test_script_opens_checkout_with_subscription_id_for_a_plan(shop, razorpay_fake, synced_plans):
    page = shop.checkout_page("lunch-monthly")
    sub_id = re.search(r'data-subscription-id="([^"]+)"', page.text).group(1)

    record = _run(page.text, {"razorpay_subscription_id": sub_id, "razorpay_payment_id": "pay_S1",
                              "razorpay_signature": "cd" * 32})

    assert record["options"]["subscription_id"] == sub_id
    assert "order_id" not in record["options"]
    sent = record["submitted"]
    assert sent["order_id"] == sub_id and sent["razorpay_subscription_id"] == sub_id
    assert sent["razorpay_payment_id"] == "pay_S1"
