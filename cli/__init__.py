"""The command line, at the top of the house: it imports every stage, and nothing imports it."""
