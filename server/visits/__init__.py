"""Field visits (入户调查): what is due, uploads from tablets, evidence checks."""
