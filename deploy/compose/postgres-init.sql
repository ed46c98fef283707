-- Run once by the postgres image, on an empty data folder: the prediction log's database
-- beside MLflow's (POSTGRES_DB), its tables made by the log-schema service; and the
-- tracking server's users and permissions (MLflow's basic-auth app makes its tables).
CREATE DATABASE predictions OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
