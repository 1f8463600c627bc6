// The console's Billing page: the card goes from Stripe.js's Element to Stripe (a SetupIntent), never to us;
// top-ups are PaymentIntents made by the gateway, confirmed by Stripe.js when Stripe asks, then read back.
"use strict";

(function () {
  const root = document.getElementById("billing");
  if (!root) return;
  const errorBox = document.getElementById("billing-error");
  const statusBox = document.getElementById("billing-status");
  const token = root.querySelector("input[name=_csrf_token]").value;

  function say(box, text) {
    errorBox.hidden = true;
    statusBox.hidden = true;
    box.textContent = text;
    box.hidden = false;
  }

  if (typeof window.Stripe !== "function") {
    say(errorBox, "Stripe.js could not be loaded, so cards cannot be entered here right now.");
    return;
  }
  const stripe = window.Stripe(root.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && data.error.message) || "Error " + response.status);
    return data;
  }

  // A SetupIntent confirmed by Stripe.js with the card typed into its Element; Stripe's own message if refused.
  async function setUpCard() {
    const intent = await post("/console/billing/setup-intent");
    const result = await stripe.confirmCardSetup(intent.client_secret, { payment_method: { card: card } });
    if (result.error) throw new Error(result.error.message || "The card was not accepted.");
    return result.setupIntent;
  }

  function busy(form, on) {
    form.querySelectorAll("button").forEach((b) => { b.disabled = on; });
  }

  const cardForm = document.getElementById("card-form");
  cardForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(cardForm, true);
    say(statusBox, "Saving the card…");
    try {
      const intent = await setUpCard();
      await post("/console/billing/card", { setup_intent: intent.id });
      window.location.reload();
    } catch (err) {
      say(errorBox, err.message);
      busy(cardForm, false);
    }
  });

  const topupForm = document.getElementById("topup-form");
  if (!topupForm) return;
  topupForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(topupForm, true);
    say(statusBox, "Paying…");
    try {
      let method = topupForm.elements.pay_with.value;
      if (method === "new") method = (await setUpCard()).payment_method;
      const amount = topupForm.elements.amount.value;
      let topup = await post("/console/billing/topups", { amount: amount, payment_method: method });
      if (topup.status === "requires_action" || topup.status === "requires_confirmation") {
        const result = await stripe.confirmCardPayment(topup.client_secret);
        if (result.error) throw new Error(result.error.message || "The payment was not authorised.");
      }
      topup = await post("/console/billing/topups/" + encodeURIComponent(topup.id) + "/refresh");
      if (topup.credit_display) document.getElementById("credit").textContent = topup.credit_display;
      if (topup.credited) {
        say(statusBox, "Top-up of " + amount + " " + topup.currency.toUpperCase() + " credited.");
      } else if (topup.error) {
        throw new Error(topup.error);
      } else {
        say(statusBox, "Payment " + topup.status + ": the credit is added as soon as Stripe confirms it.");
      }
    } catch (err) {
      say(errorBox, err.message);
    }
    busy(topupForm, false);
  });
})();
