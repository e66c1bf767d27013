"""resources layer of Data Mash."""
