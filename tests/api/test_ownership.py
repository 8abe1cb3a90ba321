"""Who may act on a ride: its rider or driver, or an admin."""

import pytest

from tests.integration.test_payments import create_ride

pytestmark = pytest.mark.integration

COMPLETION = {"driverId": "d-1", "fare": "12.00", "distance": 3.0, "duration": 600}


def test_a_stranger_cannot_complete_a_ride(client, auth_headers):
    ride_id = create_ride(client, auth_headers("42"))
    response = client.post(f"/rides/{ride_id}/complete", json=COMPLETION, headers=auth_headers("999"))
    assert response.status_code == 404
    # The driver can.
    done = client.post(f"/rides/{ride_id}/complete", json=COMPLETION, headers=auth_headers("d-1"))
    assert done.status_code == 200


def test_a_rider_pays_only_for_their_own_rides(client, auth_headers):
    ride_id = create_ride(client, auth_headers("42"))
    body = {"amount": "5.00", "paymentMethod": "pm_card_visa", "rideId": ride_id}
    stranger = client.post("/payments", json=body, headers=auth_headers("999"))
    assert stranger.status_code == 422
    assert "rideId" in stranger.json["errors"]["json"]
    assert client.post("/payments", json=body, headers=auth_headers("1", "admin")).status_code == 202
    assert client.post("/payments", json=body, headers=auth_headers("42")).status_code == 202
