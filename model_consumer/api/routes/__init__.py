"""One router per area: health, recommendations, items, model, admin, metrics."""
