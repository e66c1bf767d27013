"""assets layer of Data Mash."""
