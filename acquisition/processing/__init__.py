"""From documents to dark-field images and clusters: set assembly and analysis, the live
router, the offline reconstruction and the 0MQ transport."""
