from tests.conftest import count, plan, user
from app.models import Order, Subscription


def test_buy_on_test_gateway(client, auth):
    auth.register()
    r = client.get("/plans/lunch-monthly")
    assert r.status_code == 200
    import re
    token = re.search(r'name="checkout_token"[^>]*value="([^"]+)"', r.text).group(1)
    r = client.post("/checkout/lunch-monthly", data={"gateway": "test", "checkout_token": token})
    assert r.status_code == 303, r.text
    r = client.get(r.location)
    assert r.status_code == 200
    r = client.post(r.request.path, data={"outcome": "pay"}, follow_redirects=True)
    assert r.status_code == 200, r.text
    assert "your payment is confirmed" in r.text
    assert count(Order) == 1 and count(Subscription) == 1
    assert user().meal_credits == 20
