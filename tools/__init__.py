"""Developer tools that are not on the product's runtime path (generators of committed tables)."""
