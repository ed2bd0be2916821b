/* Opens Razorpay Checkout for the order on this page and posts its signed
   result to /payments/razorpay/verify. Values come from data-attributes on
   #razorpay-checkout (no inline script, for the Content-Security-Policy). */
(function () {
  "use strict";

  function show(text) {
    var message = document.getElementById("razorpay-message");
    message.textContent = text;
    message.hidden = false;
  }

  function submitResult(form, response) {
    ["razorpay_order_id", "razorpay_subscription_id", "razorpay_payment_id",
     "razorpay_signature"].forEach(function (name) {
      form.elements[name].value = response[name] || "";
    });
    show("Payment received. Confirming it with your bank…");
    form.submit();
  }

  function start() {
    var root = document.getElementById("razorpay-checkout");
    var button = document.getElementById("razorpay-pay");
    var form = document.getElementById("razorpay-verify-form");
    if (!root || !form) { return; }
    if (typeof window.Razorpay !== "function") {
      show("Razorpay could not be loaded. Check your connection and reload this page; " +
           "you have not been charged.");
      return;
    }
    var d = root.dataset;
    var options = {
      key: d.key,
      name: d.shopName,
      description: d.description,
      prefill: { name: d.prefillName, email: d.prefillEmail },
      notes: { reference: d.reference, user_id: d.userId, plan_id: d.planId },
      handler: function (response) { submitResult(form, response); },
      modal: {
        ondismiss: function () {
          show("The payment window was closed. You have not been charged; press Pay to try again.");
        }
      }
    };
    if (d.subscriptionId) {
      options.subscription_id = d.subscriptionId;
    } else {
      options.order_id = d.orderId;
      options.amount = d.amount;
      options.currency = d.currency;
    }
    var checkout = new window.Razorpay(options);
    checkout.on("payment.failed", function (response) {
      var reason = response && response.error && response.error.description;
      show((reason || "The payment failed.") + " You can try again with another method.");
    });
    button.hidden = false;
    button.addEventListener("click", function (event) {
      event.preventDefault();
      checkout.open();
    });
    checkout.open();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
