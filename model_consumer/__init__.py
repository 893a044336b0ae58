"""The model consumer: never sees raw data; pulls the owner's export, distills a student, serves top-K."""
