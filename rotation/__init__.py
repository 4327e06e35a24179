"""The domain core of secret rotation. It never imports the Functions runtime."""
