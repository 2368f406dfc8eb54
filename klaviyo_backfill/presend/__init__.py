"""The one reading before a send: each customer's latest order, what the account holds already,
and the months the overlap check counts."""
