"""What was sent against what Klaviyo holds, order by order and month by month: pure, no I/O."""
