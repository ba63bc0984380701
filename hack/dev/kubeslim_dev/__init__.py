"""Development helpers shared by tests/, hack/demo/ and bench/ (never by the product packages):

  digits     real data (scikit-learn's digits) and small Paddle models trained on it
  outliers   a digits CNN with one massive-activation channel: plain int8 PTQ fails, fallback recovers
  demo       seeding S3 with the demo's model and data, the example manifest
  devenv     the local devenv's kubeconfig guard, S3 settings and client
  manifests  editing QuantizationJob manifests
  zoo        the architectures users quantize (PicoDet, PP-OCR det/rec, PP-LCNet, ERNIE) exported with data by input name
"""
