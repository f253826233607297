"""`headtex complete`: partial UV texture + mask -> completed texture, with the shipped model."""
