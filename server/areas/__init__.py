"""Administrative areas: league -> county -> township -> village."""
