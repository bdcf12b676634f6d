"""ApiFunction: the Restart Cluster API (API Gateway REST, Lambda proxy), base path `/v1`.

`app.py` is the entry point (`lambda_handler`); `routes/` holds one Powertools `Router` per
resource; every failure leaves through `errors.py` as the seed's error envelope.
"""
