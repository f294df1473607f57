DROP TABLE email_sends;
