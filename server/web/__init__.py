"""The staff's web pages that bring several features together (a case's page shows its
visits and its months of proof of life). They sit above the feature packages, which
never import them."""
