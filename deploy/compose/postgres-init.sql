-- Run once by the postgres image, on an empty data folder: the prediction log's database
-- beside MLflow's (POSTGRES_DB). Its tables are made by the log-schema service.
CREATE DATABASE predictions OWNER mlflow;
