"""Stage one's start: exports read as RawOrders (CSV, JSON, JSON Lines, Shopify GraphQL), by a
layout (layouts/) that maps columns or paths onto order fields, and the values parsed."""
