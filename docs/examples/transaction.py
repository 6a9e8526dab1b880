from flask import Flask, current_app, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()
app = Flask(__name__)


class Order(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]


@app.post("/orders")
def create_order():
    order = Order(item=request.json["item"])
    db.session.add(order)
    current_app.hermes.send_message({"order": order.item}, transaction=db.session)
    db.session.commit()          # the message goes out after this, within milliseconds
    return {"ok": True}
